# Store-and-forward: the one outgoing queue of telemetry, a preallocated byte ring.
#
# Every message telemetry wants to publish (events, bank/module/metrics snapshots, command
# replies) is appended here first and sent from here, online or not, so the broker sees
# them in the order they were produced and a broker outage only makes the queue longer.
#
# Layout: a bytearray of fixed `capacity` holding records back to back from `head` to `end`:
#   [state:1][kind:1][pid:2 big-endian][len:2 big-endian][payload: len bytes]
#   state  S_PENDING (not sent since the last (re)connect), S_INFLIGHT (event sent at QoS 1,
#          PUBACK awaited; `pid` is its packet id), S_DONE (sent / acknowledged, space reusable)
#   kind   K_EVENT (payload: 20-byte packed event record, see EV_FMT) or a telemetry kind
#          (payload: the JSON text to publish).
# `send` is the offset of the next record to hand to the client.  After a disconnect, rewind()
# turns every in-flight event back to pending and restarts `send` at `head`: events are
# delivered at least once, in order; a subscriber de-duplicates by sequence number.
#
# Overflow policy (append): first reclaim S_DONE space, then drop the OLDEST TELEMETRY record;
# only when nothing but events is left: a new telemetry record is refused, a new event evicts the
# oldest event.  Every drop is counted (dropped_telemetry, dropped_events); dropped events leave a
# gap in the sequence numbers that subscribers can see.
#
# Costs: append/ack/rewind scan at most the records present (tens); removing a record from the
# middle moves at most `capacity` bytes (memmove via memoryview slice assignment, a few us).
# Nothing here runs on the control path; telemetry calls it within its time budget.
import struct

from micropython import const

_S_PENDING = const(0)
_S_INFLIGHT = const(1)
_S_DONE = const(2)

K_EVENT = const(1)
K_BANK = const(2)
K_METRICS = const(3)
K_DIAG = const(4)
K_REPLY = const(5)
K_LOSS = const(6)           # telemetry-loss diagnosis (bankgate.telemetry.loss)
K_DERATE = const(7)         # derate controls in force (bankgate.derate), published retained
K_MODULE = const(0x20)      # K_MODULE + slot (0..15)

HDR = const(6)
EV_FMT = ">iihhii"          # seq, t_ms, code, addr, a, b
_EV_SIZE = const(20)


class Ring:
    def __init__(self, capacity=8192):
        self.capacity = capacity
        self.buf = bytearray(capacity)
        self.mv = memoryview(self.buf)
        self.head = 0
        self.end = 0
        self.send = 0
        self.n_events = 0            # event records held (pending, in flight or done-not-reclaimed)
        self.n_records = 0
        self.dropped_events = 0
        self.dropped_telemetry = 0
        self.stored = 0

    # ------------------------------------------------------------ inspection
    def used(self):
        return self.end - self.head

    def rec_len(self, off):
        b = self.buf
        return HDR + (b[off + 4] << 8 | b[off + 5])

    def kind(self, off):
        return self.buf[off + 1]

    def payload(self, off):
        """memoryview of the record's payload (allocates the view object only)."""
        b = self.buf
        n = b[off + 4] << 8 | b[off + 5]
        return self.mv[off + HDR:off + HDR + n]

    def tag(self, off):
        return self.buf[off + 2] << 8 | self.buf[off + 3]

    def event(self, off):
        """(seq, t_ms, code, addr, a, b) of the event record at `off`."""
        return struct.unpack_from(EV_FMT, self.buf, off + HDR)

    def payload_len(self, off):
        b = self.buf
        return b[off + 4] << 8 | b[off + 5]

    def pending(self):
        """Records not yet handed to the client since the last (re)connect."""
        n = 0
        off = self.send
        while off < self.end:
            if self.buf[off] == _S_PENDING:
                n += 1
            off += self.rec_len(off)
        return n

    # --------------------------------------------------------------- writing
    def append_event(self, seq, t_ms, code, addr, a, b):
        off = self._reserve(_EV_SIZE, True)
        if off < 0:
            return False
        struct.pack_into(EV_FMT, self.buf, off + HDR, seq, t_ms, code, addr, a, b)
        return True

    def append(self, kind, data, tag=0):
        """Append a telemetry record: data is the encoded payload (bytes); tag a 16-bit detail
        kept in the (otherwise unused) pid field, e.g. the module address for K_MODULE."""
        n = len(data)
        off = self._reserve(n, False, kind)
        if off < 0:
            return False
        self.mv[off + HDR:off + HDR + n] = data
        self.buf[off + 2] = (tag >> 8) & 0xFF
        self.buf[off + 3] = tag & 0xFF
        return True

    def _reserve(self, n, is_event, kind=K_EVENT):
        total = HDR + n
        if total > self.capacity or n > 0xFFFF:
            if is_event:
                self.dropped_events += 1
            else:
                self.dropped_telemetry += 1
            return -1
        if not self._make_room(total, is_event):
            self.dropped_telemetry += 1
            return -1
        off = self.end
        b = self.buf
        b[off] = _S_PENDING
        b[off + 1] = K_EVENT if is_event else kind
        b[off + 2] = 0
        b[off + 3] = 0
        b[off + 4] = n >> 8
        b[off + 5] = n & 0xFF
        self.end = off + total
        self.n_records += 1
        if is_event:
            self.n_events += 1
        self.stored += 1
        return off

    def _make_room(self, total, is_event):
        while self.capacity - self.end < total:
            if self.head > 0:
                self._compact()
                continue
            off = self._find_done()
            if off >= 0:
                self._remove(off)
                continue
            off = self._oldest_telemetry()
            if off >= 0:
                self._remove(off)
                self.dropped_telemetry += 1
                continue
            if not is_event or self.end == 0:
                return False
            self._remove(self.head)          # only events left: the oldest event goes
            self.dropped_events += 1
        return True

    def _compact(self):
        h = self.head
        n = self.end - h
        self.mv[0:n] = self.mv[h:self.end]
        self.end = n
        self.send -= h
        self.head = 0

    def _find_done(self):
        off = self.head
        while off < self.end:
            if self.buf[off] == _S_DONE:
                return off
            off += self.rec_len(off)
        return -1

    def _oldest_telemetry(self):
        off = self.head
        while off < self.end:
            if self.buf[off + 1] != K_EVENT:
                return off
            off += self.rec_len(off)
        return -1

    def _remove(self, off):
        n = self.rec_len(off)
        if self.buf[off + 1] == K_EVENT:
            self.n_events -= 1
        self.n_records -= 1
        e = self.end
        if off == self.head:
            self.head = off + n
            if self.send < self.head:
                self.send = self.head
            if self.head == e:
                self.head = self.end = self.send = 0
            return
        self.mv[off:e - n] = self.mv[off + n:e]
        self.end = e - n
        if self.send > off:
            self.send -= n

    # --------------------------------------------------------------- sending
    def next_pending(self):
        """Offset of the next record to send, or -1.  Skips records already done."""
        off = self.send
        b = self.buf
        while off < self.end and b[off] != _S_PENDING:
            off += self.rec_len(off)
        self.send = off
        return off if off < self.end else -1

    def mark_sent(self, off, pid):
        """The record at `off` (== next_pending()) was handed to the client.
        Events wait in flight for PUBACK `pid`; telemetry is done at once."""
        b = self.buf
        if b[off + 1] == K_EVENT and pid:
            b[off] = _S_INFLIGHT
            b[off + 2] = pid >> 8
            b[off + 3] = pid & 0xFF
        else:
            b[off] = _S_DONE
        self.send = off + self.rec_len(off)
        self._advance()

    def ack(self, pid):
        """PUBACK `pid` arrived: its event is delivered.  Returns True if it matched."""
        b = self.buf
        hi = pid >> 8
        lo = pid & 0xFF
        off = self.head
        while off < self.send:
            if b[off] == _S_INFLIGHT and b[off + 2] == hi and b[off + 3] == lo:
                b[off] = _S_DONE
                self._advance()
                return True
            off += self.rec_len(off)
        return False

    def find_inflight(self, pid):
        """Offset of the in-flight event sent with packet id `pid`, or -1."""
        b = self.buf
        hi = pid >> 8
        lo = pid & 0xFF
        off = self.head
        while off < self.send:
            if b[off] == _S_INFLIGHT and b[off + 2] == hi and b[off + 3] == lo:
                return off
            off += self.rec_len(off)
        return -1

    def inflight(self):
        n = 0
        off = self.head
        while off < self.send:
            if self.buf[off] == _S_INFLIGHT:
                n += 1
            off += self.rec_len(off)
        return n

    def rewind(self):
        """Connection lost: unacknowledged events go back to pending, sending restarts at head."""
        b = self.buf
        off = self.head
        while off < self.end:
            if b[off] == _S_INFLIGHT:
                b[off] = _S_PENDING
            off += self.rec_len(off)
        self.send = self.head

    def _advance(self):
        b = self.buf
        while self.head < self.end and b[self.head] == _S_DONE:
            self._remove(self.head)
