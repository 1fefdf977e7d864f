"""Random write/mkdir/rm/read/list sequences through pyxs and Debian's C
clients, checked against a dict model of xenstore.

The model is the spec as xenstore.txt states it: WRITE and MKDIR create
parents with empty values, MKDIR keeps an existing value, RM removes a
subtree (fine if missing, ENOENT if the parent is missing too), and
DIRECTORY lists children in creation order (xenstored appends new children
and drops removed ones).  A Python dict keeps insertion order the same way,
so children are the model's keys under a path, in order.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import pytest
import pyxs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from xenstore_fixtures import HAVE_C_TOOLS, xs_tool

from pvgrub_py.xenstore.daemon import XenstoredThread

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_C_TOOLS, reason="xenstore-utils missing"),
]

TOP = "/hyp"
segments = st.sampled_from(["a", "b", "c", "dev-0", "x_1"])
rel_paths = st.lists(segments, min_size=1, max_size=3).map("/".join)
values = st.text("abcxyz0129 -_", min_size=1, max_size=12)  # pyxs cannot write b""
via = st.sampled_from(["pyxs", "c"])


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class XenstoreAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="xsh", dir="/tmp"))
        self.daemon = XenstoredThread(self.dir / "sock").start()
        self.env = {"XENSTORED_PATH": str(self.dir / "sock"), "PATH": "/usr/bin:/bin"}
        self.xs = pyxs.Client(unix_socket_path=str(self.dir / "sock"))
        self.xs.connect()
        self.xs.mkdir(TOP.encode())
        self.model: dict[str, str] = {TOP: ""}

    def teardown(self) -> None:
        self.xs.close()
        self.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model -------------------------------------------------------------------

    def children(self, path: str) -> list[str]:
        return [p.rsplit("/", 1)[1] for p in self.model if parent(p) == path]

    def depth_first(self, path: str) -> list[str]:
        order = [path]
        for name in self.children(path):
            order += self.depth_first(f"{path}/{name}")
        return order

    def create(self, path: str, value: str | None) -> None:
        missing = []
        walk = path
        while walk not in self.model:
            missing.append(walk)
            walk = parent(walk)
        for p in reversed(missing):
            self.model[p] = ""
        if value is not None:
            self.model[path] = value

    # -- rules -------------------------------------------------------------------------

    @rule(rel=rel_paths, value=values, how=via)
    def write(self, rel: str, value: str, how: str) -> None:
        path = f"{TOP}/{rel}"
        if how == "pyxs":
            self.xs.write(path.encode(), value.encode())
        else:
            assert xs_tool(self.env, "xenstore-write", "--", path, value).returncode == 0
        self.create(path, value)

    @rule(rel=rel_paths)
    def mkdir(self, rel: str) -> None:
        path = f"{TOP}/{rel}"
        self.xs.mkdir(path.encode())
        self.create(path, None)

    @rule(rel=rel_paths, how=via)
    def rm(self, rel: str, how: str) -> None:
        path = f"{TOP}/{rel}"
        expect_ok = path in self.model or parent(path) in self.model
        if how == "pyxs":
            try:
                self.xs.delete(path.encode())
                succeeded = True
            except pyxs.PyXSError as e:
                assert e.args[0] == errno.ENOENT
                succeeded = False
        else:
            succeeded = xs_tool(self.env, "xenstore-rm", path).returncode == 0
        assert succeeded == expect_ok
        for p in [p for p in self.model if p == path or p.startswith(path + "/")]:
            del self.model[p]

    @rule(rel=rel_paths, how=via)
    def read(self, rel: str, how: str) -> None:
        path = f"{TOP}/{rel}"
        if how == "pyxs":
            got: str | None = None
            try:
                got = self.xs.read(path.encode()).decode()
            except pyxs.PyXSError as e:
                assert e.args[0] == errno.ENOENT
        else:
            done = xs_tool(self.env, "xenstore-read", path)
            got = done.stdout[:-1] if done.returncode == 0 else None
        assert got == self.model.get(path)

    @rule(rel=st.one_of(st.just(""), rel_paths), how=via)
    def list(self, rel: str, how: str) -> None:
        path = f"{TOP}/{rel}" if rel else TOP
        if how == "pyxs":
            got: list[str] | None = None
            try:
                got = [name.decode() for name in self.xs.list(path.encode())]
            except pyxs.PyXSError as e:
                assert e.args[0] == errno.ENOENT
        else:
            done = xs_tool(self.env, "xenstore-list", path)
            got = done.stdout.split() if done.returncode == 0 else None
        assert got == (self.children(path) if path in self.model else None)

    @rule(rel=rel_paths, value=values)
    def transaction_write(self, rel: str, value: str) -> None:
        path = f"{TOP}/{rel}"
        self.xs.transaction()
        self.xs.write(path.encode(), value.encode())
        assert self.xs.commit()  # nobody else writes: no conflict
        self.create(path, value)

    # -- both clients see the model's whole tree --------------------------------------------

    @invariant()
    def pyxs_sees_the_model(self) -> None:
        seen = {p.decode(): v.decode() for p, v, _ in self.xs.walk(TOP.encode())}
        assert seen == self.model
        for path in self.model:
            assert self.children(path) == [c.decode() for c in self.xs.list(path.encode())]


def test_c_client_sees_the_model_too() -> None:
    """The C client's whole-tree view, after a fixed mixed sequence."""
    machine = XenstoreAgainstModel()
    try:
        machine.write("a/b", "one", "c")
        machine.write("a/c", "two", "pyxs")
        machine.mkdir("x_1/dev-0")
        machine.rm("a/b", "c")
        machine.write("a/b", "three", "pyxs")
        done = xs_tool(machine.env, "xenstore-ls", "-f", TOP)
        listed = dict(line.split(" = ", 1) for line in done.stdout.splitlines())
        assert {k: v.strip('"') for k, v in listed.items()} == {
            k: v for k, v in machine.model.items() if k != TOP
        }
        assert list(listed) == machine.depth_first(TOP)[1:]  # and in the same order
    finally:
        machine.teardown()


TestXenstoreAgainstModel = XenstoreAgainstModel.TestCase
TestXenstoreAgainstModel.settings = settings(max_examples=8, stateful_step_count=16, deadline=None)
