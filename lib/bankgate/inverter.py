# Inverter link: presents the ADMITTED bank to the inverter as one
# Pylontech-compatible low-voltage battery on CAN (docs/inverter.md).
#
# Every inverter.period_ms it sends 0x351 (limits), 0x355 (SOC/SOH), 0x356
# (voltage/current/temperature), 0x359 (protection/alarm flags, module count),
# 0x35C (request flags) and 0x35E (manufacturer).  It listens for the inverter's
# 0x305 keep-alive.  What the inverter sees always follows admission:
# - only admitted modules count (limits, SOC, module count, alarms);
# - charge/discharge enable and both current limits drop to 0 whenever the bank
#   is not closed, a fault is latched, or admission is ramping down before an
#   opening under load.
# Allocation-free: one preallocated 8-byte buffer per frame, encoders from
# bankgate.proto.pylon_can write into it in place.
from micropython import const

from bankgate import clock as tk
from bankgate.bus.can import BUS_INVERTER, BusOffRecovery
from bankgate.events import EV_INVERTER
from bankgate.proto import pylon_can as pc

_ID_HEARTBEAT = const(0x305)
_FLAG_CHARGE_EN = const(0x80)
_FLAG_DISCHARGE_EN = const(0x40)
_FLAG_FORCE1 = const(0x20)
_FLAG_FORCE2 = const(0x10)
_FLAG_FULL = const(0x08)


class InverterLink:
    def __init__(self, hw, cfg, bank, admission, events):
        c = cfg["inverter"]
        self.can = hw.can_inverter
        self.bank = bank
        self.adm = admission
        self.events = events
        # bus-off: restart with backoff, counted, a bouncing controller is a bus fault
        self.recovery = BusOffRecovery(self.can, events, BUS_INVERTER, 500000)
        self.period_ms = c["period_ms"]
        self.hb_timeout_ms = c["heartbeat_timeout_ms"]
        self.name = c["manufacturer"]
        now = hw.clock.ticks_ms()
        self.next_tx = now
        self.t_heartbeat = now
        self.heartbeat_seen = False
        self.heartbeat_ok = False
        self.frames_sent = 0
        self.tx_busy = 0             # send() refused (queue full): retried on the next call
        self.overruns = 0            # periods that ended with frames still unsent
        self._cursor = 6             # next frame of this period to hand to the controller
        self.rx_other = 0
        self.enabled_flags = 0       # last 0x35C flags sent
        self._rx = bytearray(8)
        self._buf = [bytearray(8) for _ in range(6)]
        self._ids = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
        self._dlc = bytearray(6)
        pc.encode_35e(self._buf[5], self.name)  # constant: encode once

    def connected(self):
        """True while the inverter may draw or push current through the bank."""
        a = self.adm
        return a.admitted_mask != 0 and a.faults == 0 and not a.ramp_down

    def _receive(self, now):
        can = self.can
        rx = self._rx
        while True:
            r = can.recv(rx)
            if r < 0:
                break
            if (r >> 4) == _ID_HEARTBEAT:
                self.t_heartbeat = now
                self.heartbeat_seen = True
                if not self.heartbeat_ok:
                    self.heartbeat_ok = True
                    self.events.emit(now, EV_INVERTER, -1, 1, 0)
            else:
                self.rx_other += 1
        if self.heartbeat_ok and tk.diff(now, self.t_heartbeat) > self.hb_timeout_ms:
            self.heartbeat_ok = False
            self.events.emit(now, EV_INVERTER, -1, 0, tk.diff(now, self.t_heartbeat))

    def _encode(self):
        a = self.adm
        b = self.bank
        bufs = self._buf
        dlc = self._dlc
        on = self.connected()
        prot = 0
        alarm = 0
        req = 0
        mask = a.admitted_mask
        for m in b.modules:
            if (mask >> m.slot) & 1:
                prot |= m.protections
                alarm |= m.alarms
                req |= m.mgmt_flags
        chg_ma = a.chg_limit_ma if on else 0
        dsg_ma = a.dsg_limit_ma if on else 0
        dlc[0] = pc.encode_351(bufs[0], a.chg_v_mv, chg_ma, dsg_ma, a.dsg_v_mv)
        dlc[1] = pc.encode_355(bufs[1], b.soc_pm, b.soh_pm)
        dlc[2] = pc.encode_356(bufs[2], b.bank_mv, b.bank_ma, b.temp_dc)
        dlc[3] = pc.encode_359(bufs[3], prot, alarm, a.admitted, a.faults != 0)
        flags = 0
        if on:
            # enable follows the limit as sent (0.1 A): a limit that rounds to 0.0 A
            # must not come with an enable bit
            if pc.rdiv(chg_ma, 100) > 0:
                flags |= _FLAG_CHARGE_EN
            if pc.rdiv(dsg_ma, 100) > 0:
                flags |= _FLAG_DISCHARGE_EN
            flags |= req & (_FLAG_FORCE1 | _FLAG_FORCE2 | _FLAG_FULL)
        self.enabled_flags = flags
        dlc[4] = pc.encode_35c(bufs[4], flags)
        dlc[5] = 8

    def service(self, now):
        """Receive, and feed this period's frames into the controller as its TX
        queue accepts them (an MCP2515 has 3 TX buffers, a TWAI queue may be
        short): frames not accepted now are retried on the next call; a period
        that ends with frames still unsent counts as an overrun."""
        self.recovery.service(now)
        self._receive(now)
        if tk.due(now, self.next_tx):
            if self._cursor < 6:
                self.overruns += 1
            self.next_tx = tk.add(now, self.period_ms)
            self._encode()
            self._cursor = 0
        can = self.can
        ids = self._ids
        bufs = self._buf
        dlc = self._dlc
        while self._cursor < 6:
            i = self._cursor
            if not can.send(ids[i], bufs[i], dlc[i]):
                self.tx_busy += 1
                break
            self.frames_sent += 1
            self._cursor = i + 1

    def wait_ms(self, now):
        if self._cursor < 6:
            return 1
        return tk.diff(self.next_tx, now)

    def snapshot(self):
        d = {"heartbeat": self.heartbeat_ok, "frames_sent": self.frames_sent,
             "tx_busy": self.tx_busy, "overruns": self.overruns, "flags": self.enabled_flags,
             "can_recovery": self.recovery.snapshot()}
        if self.recovery.fault:
            d["can_diagnosis"] = self.recovery.diagnosis()
        return d
