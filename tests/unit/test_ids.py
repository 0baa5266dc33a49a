import os
import re

from memory.ids import random_hex


def test_ids_are_hex_of_the_asked_size_and_distinct() -> None:
    ids = [random_hex() for _ in range(2000)]  # several 4 KiB refills
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{16}", random_hex(8))
    assert len(random_hex(5000)) == 10000  # larger than a batch


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    random_hex()  # the parent's buffer holds bytes not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        try:
            os.write(write, random_hex().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != random_hex()  # the parent's next id: the same bytes without the reset
