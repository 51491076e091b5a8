"""Room rules as plain state: who hears whom, music, moderator exit."""

from bridge.room import (
    Connect,
    Disconnect,
    EndLeg,
    RoomRules,
    RoomSet,
    Signal,
    StartMusic,
    StopMusic,
)

P, M = "participant", "moderator"


def links(cmds):
    return {(c.src, c.dst) for c in cmds if isinstance(c, Connect)}


def test_participants_wait_with_music_until_a_moderator():
    b = RoomSet()
    assert b.join("demo", 1, P, 0) == [StartMusic(1)]
    assert b.join("demo", 2, P, 0) == [StartMusic(2)]
    assert b.link_count() == 0  # waiting callers neither speak nor hear
    cmds = b.join("demo", 3, M, 1)
    assert StopMusic((1, 2)) in cmds
    assert links(cmds) == {(a, c) for a in (1, 2, 3) for c in (1, 2, 3) if a != c}
    assert Signal((1, 2, 3), ("join_tone",)) in cmds


def test_members_never_hear_themselves_and_rooms_are_isolated():
    b = RoomSet()
    b.join("a", 1, M, 0)
    cmds = b.join("a", 2, P, 0) + b.join("b", 3, M, 0) + b.join("b", 4, P, 0)
    assert all(c.src != c.dst for c in cmds if isinstance(c, Connect))
    assert links(cmds) == {(1, 2), (2, 1), (3, 4), (4, 3)}


def test_last_moderator_leaving_ends_the_room():
    b = RoomSet()
    for leg, role in ((1, M), (2, P), (3, P)):
        b.join("demo", leg, role, 0)
    cmds = b.leave(1)
    assert {c for c in cmds if isinstance(c, EndLeg)} == {
        EndLeg(2, ("moderator_left",)),
        EndLeg(3, ("moderator_left",)),
    }
    assert b.link_count() == 0


def test_room_can_outlive_its_moderator():
    b = RoomSet()
    rules = RoomRules(end_on_moderator_exit=False)
    for leg, role in ((1, M), (2, P), (3, P)):
        b.join("demo", leg, role, 0, rules)
    cmds = b.leave(1)
    assert not [c for c in cmds if isinstance(c, EndLeg)]
    assert b.rooms["demo"].links == {(2, 3), (3, 2)}
    assert Signal((2, 3), ("leave_tone",)) in cmds


def test_mute_and_lecture_cut_only_what_the_others_hear():
    b = RoomSet()
    for leg, role in ((1, M), (2, P), (3, P)):
        b.join("demo", leg, role, 0)
    room = b.rooms["demo"]
    cmds = room.set_muted(2, True)
    assert set(cmds) == {Disconnect(2, 1), Disconnect(2, 3)}
    room.set_lecture(True)
    assert room.links == {(1, 2), (1, 3)}
    room.set_lecture(False)  # 2 stays muted by its own choice
    assert room.links == {(1, 2), (1, 3), (3, 1), (3, 2)}


def test_max_members():
    b = RoomSet()
    rules = RoomRules(max_members=2)
    b.join("demo", 1, M, 0, rules)
    assert not b.rooms["demo"].is_full()
    b.join("demo", 2, P, 0, rules)
    assert b.rooms["demo"].is_full()


def test_churn_leaves_no_stale_links():
    b = RoomSet()
    mod = 10_000
    b.join("demo", mod, M, 0, RoomRules(end_on_moderator_exit=False))
    for i in range(200):
        b.join("demo", i, P, 0)
        if i % 3:
            b.leave(i - 1)
    for i in range(200):
        b.leave(i)
    b.leave(mod)
    assert b.link_count() == 0 and b.room_of == {} and b.rooms == {}


def test_hold_cuts_what_the_member_says_and_resume_relinks_every_way():
    b = RoomSet()
    for leg, role in ((1, M), (2, P), (3, P)):
        b.join("demo", leg, role, 0)
    room = b.rooms["demo"]
    cmds = room.media_changed(2, held=True)
    # Nobody hears the held member; it is still a member and still listens,
    # and its listening links are made again on its new conference port.
    assert {(c.src, c.dst) for c in cmds if isinstance(c, Disconnect)} == {(2, 1), (2, 3)}
    assert links(cmds) == {(1, 2), (3, 2)}
    assert 2 in room.members and room.links == {(1, 3), (3, 1), (1, 2), (3, 2)}
    # A hold never overrides a mute: unmuting while held keeps it unheard.
    assert room.set_muted(2, False) == []
    cmds = room.media_changed(2, held=False)
    assert not [c for c in cmds if isinstance(c, Disconnect)]
    assert links(cmds) == {(1, 2), (3, 2), (2, 1), (2, 3)}
    # A re-INVITE that is not a hold (a new codec) re-links the same way.
    assert links(room.media_changed(2, held=False)) == {(1, 2), (3, 2), (2, 1), (2, 3)}
    assert room.media_changed(9, held=True) == []  # not a member
