# Bus drivers: the RS485 half-duplex master (rs485), the CAN interface and its
# constants (can), the MCP2515 SPI CAN controller (mcp2515).  See docs/bus.md.
