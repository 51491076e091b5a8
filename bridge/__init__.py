"""Conference rooms: who is in which room and who hears whom."""

from bridge.room import Connect, Disconnect, Member, Room, RoomSet

__all__ = ["RoomSet", "Connect", "Disconnect", "Member", "Room"]
