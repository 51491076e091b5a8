"""Conference rooms: who is in which room and who hears whom."""

from bridge.room import Bridge, Connect, Disconnect, Member, Room

__all__ = ["Bridge", "Connect", "Disconnect", "Member", "Room"]
