# bgsim -- the simulated battery bank (host side, unix MicroPython port).
#
#   chem      OCV(SOC) tables and BMS voltage thresholds per chemistry
#   physics   modules, branches, fuses, contactors, DC link: the parallel network
#   bms       the module's BMS: cell voltages, limits, alarms, protections, and
#             its answers on the simulated RS485 / CAN bus
#   scenario  the JSON scenario format (docs/scenarios.md): load + validate
#   runner    wires the model to the real firmware (bankgate.app.Gateway) on fake
#             hardware, runs it in simulated time (or wall-clock time) and reports
#
# Floats are fine here: this is the physics, not the firmware.
