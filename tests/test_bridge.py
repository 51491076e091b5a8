"""Room membership and media links as plain state."""

from bridge.room import Bridge, Connect, Disconnect


def test_members_hear_each_other_never_themselves():
    b = Bridge()
    assert b.join("demo", 1, "participant", 0.0) == []
    cmds = b.join("demo", 2, "participant", 1.0)
    assert set(cmds) == {Connect(1, 2), Connect(2, 1)}
    cmds = b.join("demo", 3, "moderator", 2.0)
    assert set(cmds) == {Connect(1, 3), Connect(3, 1), Connect(2, 3), Connect(3, 2)}
    assert all(c.src != c.dst for c in cmds)


def test_rooms_are_isolated():
    b = Bridge()
    b.join("a", 1, "participant", 0)
    assert b.join("b", 2, "participant", 0) == []


def test_leave_removes_every_link_and_empty_rooms():
    b = Bridge()
    for leg in range(1, 6):
        b.join("demo", leg, "participant", 0)
    cmds = b.leave(3)
    assert len(cmds) == 8 and all(isinstance(c, Disconnect) and 3 in (c.src, c.dst) for c in cmds)
    for leg in (1, 2, 4, 5):
        b.leave(leg)
    assert b.rooms == {} and b.link_count() == 0
    assert b.leave(99) == []


def test_churn_leaves_no_stale_links():
    b = Bridge()
    for i in range(200):
        b.join("demo", i, "participant", 0)
        if i % 3:
            b.leave(i - 1)
    for i in range(200):
        b.leave(i)
    assert b.link_count() == 0 and b.room_of == {}
