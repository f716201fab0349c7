# Protocol families: bytes in, integers out (see docs/protocols.md).
#   frame.py      shared Pylontech-style ASCII framing (~ VER ADR CID1 CID2 LENGTH INFO CHKSUM \r)
#   pylontech.py  Pylontech RS485 (US2000/US3000/UP2500 ...)
#   pace.py       PACE BMS RS485 protocol V2.5 (PBmsTools), same framing, own layouts
#   pylon_can.py  Pylontech low-voltage CAN (battery <-> inverter frames)
#   registry.py   family name -> module
#   errors.py     rejection codes and their categories
