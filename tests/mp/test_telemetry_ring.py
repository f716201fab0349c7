# Store-and-forward ring (bankgate.telemetry.ring): order, overflow policy, acks, rewind.
import mptest

from bankgate.telemetry import ring as rg


def _kinds(r):
    out = []
    off = r.head
    while off < r.end:
        out.append((r.kind(off), r.buf[off]))
        off += r.rec_len(off)
    return out


def test_fifo_order_and_payloads():
    r = rg.Ring(512)
    assert r.append_event(1, 100, 4, 2, 7, 1)
    assert r.append(rg.K_BANK, b'{"mv":1}')
    assert r.append_event(2, 150, 4, 2, 7, 2)
    off = r.next_pending()
    assert r.kind(off) == rg.K_EVENT and r.event(off) == (1, 100, 4, 2, 7, 1)
    r.mark_sent(off, 11)
    off = r.next_pending()
    assert r.kind(off) == rg.K_BANK and bytes(r.payload(off)) == b'{"mv":1}'
    r.mark_sent(off, 0)
    off = r.next_pending()
    assert r.event(off)[0] == 2
    r.mark_sent(off, 12)
    assert r.next_pending() == -1 and r.inflight() == 2
    # the head event is unacked: nothing is reclaimed until its PUBACK
    assert r.n_records == 3
    assert r.ack(11) and not r.ack(11) and not r.ack(99)
    assert r.ack(12)
    assert r.n_records == 0 and r.used() == 0


def test_rewind_resends_unacked_events_in_order_not_sent_telemetry():
    r = rg.Ring(512)
    r.append_event(1, 0, 4, 2, 0, 0)
    r.append(rg.K_BANK, b"x")
    r.append_event(2, 0, 4, 2, 0, 0)
    for pid in (1, 0, 2):
        r.mark_sent(r.next_pending(), pid)
    r.ack(2)                       # acked out of order
    r.rewind()                     # connection lost
    off = r.next_pending()
    assert r.event(off)[0] == 1    # event 1 again; telemetry and event 2 are done
    r.mark_sent(off, 5)
    assert r.next_pending() == -1


def test_overflow_drops_oldest_telemetry_before_any_event():
    r = rg.Ring(300)
    r.append_event(1, 0, 4, 2, 0, 0)
    for i in range(10):
        r.append(rg.K_BANK, b"B" * 40)
    r.append_event(2, 0, 4, 2, 0, 0)
    assert r.dropped_telemetry > 0 and r.dropped_events == 0
    kinds = [k for k, _ in _kinds(r)]
    assert kinds.count(rg.K_EVENT) == 2
    # fill with events only: telemetry goes first, then new telemetry is refused
    for s in range(3, 12):
        assert r.append_event(s, 0, 4, 2, 0, 0)
    assert [k for k, _ in _kinds(r)].count(rg.K_BANK) == 0
    assert not r.append(rg.K_BANK, b"B" * 40)
    d = r.dropped_telemetry
    # more events than fit: the OLDEST events go, counted; order kept
    for s in range(12, 20):
        r.append_event(s, 0, 4, 2, 0, 0)
    assert r.dropped_events > 0 and r.dropped_telemetry == d
    seqs = []
    off = r.head
    while off < r.end:
        seqs.append(r.event(off)[0])
        off += r.rec_len(off)
    assert seqs == list(range(20 - len(seqs), 20))
    assert r.used() <= r.capacity


def test_oversized_record_is_refused_and_counted():
    r = rg.Ring(128)
    assert not r.append(rg.K_BANK, b"x" * 200)
    assert r.dropped_telemetry == 1 and r.n_records == 0


def test_tag_keeps_module_address():
    r = rg.Ring(128)
    r.append(rg.K_MODULE + 3, b"{}", 17)
    off = r.next_pending()
    assert r.kind(off) == rg.K_MODULE + 3 and r.tag(off) == 17


def test_append_event_allocates_nothing_once_room_exists():
    r2 = rg.Ring(256)

    def emit():
        return r2.append_event(5, 6, 7, 8, 9, 10)
    assert mptest.no_alloc(emit)
