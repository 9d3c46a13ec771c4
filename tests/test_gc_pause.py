"""The collector's pause: overlapping pauses (a streamed bundle and a list,
each held across yields to other green threads) keep it off until the last
one ends, and a collector someone else turned off stays off; after a full
sync the live objects are frozen and free pages handed back."""
import gc

from nsx_proxy import gc_pause


def test_overlapping_pauses_turn_the_collector_back_on_once_the_last_ends():
    assert gc.isenabled()
    bundle, listing = gc_pause.paused(), gc_pause.paused()
    bundle.__enter__()
    listing.__enter__()
    bundle.__exit__(None, None, None)          # not nested: the first ends first
    assert not gc.isenabled()
    listing.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_that_raises_still_ends():
    try:
        with gc_pause.paused():
            raise KeyError("a step failed")
    except KeyError:
        pass
    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off():
    gc.disable()
    try:
        with gc_pause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_after_a_full_sync_the_live_objects_are_frozen_and_free_pages_handed_back():
    before = gc.get_freeze_count()
    try:
        gc_pause.settled()
        assert gc.get_freeze_count() > before
        assert gc_pause._TRIM is not None          # glibc here, as in the image
    finally:
        gc.unfreeze()


def test_after_a_full_sync_glibc_hands_back_the_top_of_its_heap_by_itself():
    """A large free (a list body) makes glibc keep what is freed at the top
    of its heap afterwards (its thresholds rise); after a full sync the
    thresholds are fixed, so the top goes back by itself (a fresh process:
    the thresholds are the process's)."""
    import os
    import subprocess
    import sys
    probe = """if True:
        import ctypes, gc, sys
        from nsx_proxy import gc_pause

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks",
                        "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                        "keepcost")]
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = Info
        big = bytearray(20 << 20)              # a large block, mapped, then freed
        del big
        if sys.argv[1] == "settled":
            gc_pause.settled()
        blocks = [bytearray(64 << 10) for _ in range(200)]   # 12.8 MB on the heap
        del blocks
        print(libc.mallinfo2().keepcost)
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kept = {how: int(subprocess.run([sys.executable, "-c", probe, how], check=True, cwd=repo,
                                    capture_output=True, text=True).stdout)
            for how in ("settled", "not")}
    assert kept["not"] > 10 << 20 and kept["settled"] < 2 << 20, kept
