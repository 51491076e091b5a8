"""What a leg hears: prompts, slot players, per-leg timers, hang-up after a prompt.

`Media` carries out the playing side of every dialogue. When a prompt ends it
tells the leg's handler (`on_prompt_done`) unless the leg was to hang up after
it; it names no other module above the leg table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from ivr.numbers import Number, number_prompts
from ivr.prompts import PromptLibrary, wav_seconds
from ivr.tones import SIGNALS
from pbx.useragent import UserAgent
from ponte.legs import Idle, Leg, LegTable
from ponte.loop import Loop

log = logging.getLogger("ponte.call")

# Margin after a prompt's nominal length before we call it finished: covers
# the jitter between the bridge clock and ours.
PROMPT_TAIL = 0.15


class Media:
    """Prompts, slots and timers of every leg, on the loop thread."""

    def __init__(self, ua: UserAgent, prompts: PromptLibrary, loop: Loop, legs: LegTable) -> None:
        self.ua = ua
        self.prompts = prompts
        self.loop = loop
        self.legs = legs

    # -- the prompt (one at a time, may be barged in on) -------------------
    def play(self, leg: Leg, ids: Iterable[str], barge_in: bool = False) -> None:
        """Play prompts by id in the leg's language; the handler hears when they end."""
        prompts = [self.prompts.get(pid, leg.language) for pid in ids]
        self.stop_prompt(leg)
        self.ua.play(leg.id, [p.path for p in prompts])
        leg.playback.barge_in = barge_in
        seconds = sum(p.seconds for p in prompts) + PROMPT_TAIL
        leg.playback.prompt_timer = self.loop.call_later(seconds, lambda: self._prompt_done(leg))

    def stop_prompt(self, leg: Leg) -> None:
        """Cut the current prompt short."""
        if leg.playback.prompt_timer is not None:
            leg.playback.prompt_timer.cancel()
            leg.playback.prompt_timer = None
        self.ua.stop_play(leg.id)

    def barge(self, leg: Leg) -> None:
        """A digit arrived: stop the prompt if it may be interrupted."""
        if leg.playback.barge_in:
            self.stop_prompt(leg)

    def playing(self, leg: Leg) -> bool:
        """Whether a prompt is under way."""
        return leg.playback.prompt_timer is not None

    def _prompt_done(self, leg: Leg) -> None:
        leg.playback.prompt_timer = None
        self.ua.stop_play(leg.id)
        if leg.playback.hangup_after is not None:
            self.hangup(leg, leg.playback.hangup_after)
        else:
            leg.handler.on_prompt_done(leg)

    def play_then_hangup(
        self, leg: Leg, ids: Iterable[str], reason: str, code: int | None = None
    ) -> None:
        """Say why, then end the call (`code`: the final response if unanswered)."""
        self.play(leg, ids, barge_in=False)
        leg.playback.hangup_after = reason
        if code is not None:
            leg.playback.hangup_code = code

    def hangup_after_prompt(self, leg: Leg, reason: str) -> None:
        """End the call when the current prompt ends (now if none plays)."""
        if self.playing(leg):
            leg.playback.hangup_after = reason
        else:
            self.hangup(leg, reason)

    def hangup(self, leg: Leg, reason: str) -> None:
        """End the call now."""
        log.info("call %d ending: %s", leg.id, reason)
        self.ua.hangup(leg.id, leg.playback.hangup_code)

    # -- slots: players beside the prompt (signals, music, roll call) ------
    def say(self, leg_id: int, items: Iterable[str | Path | Number], slot: str) -> None:
        """Play prompts, signals, recordings or counts in a slot, and free the
        player when they are done."""
        self.say_to((leg_id,), items, slot)

    def say_to(
        self, leg_ids: Iterable[int], items: Iterable[str | Path | Number], slot: str
    ) -> None:
        """`say` to several legs: those who are told the same files (a tone
        for all; a prompt per language) share one player, so a room's
        listeners go on hearing the same sources: one mix, one encode."""
        items = tuple(items)
        groups: dict[tuple[Path, ...], list[Leg]] = {}
        for leg_id in leg_ids:
            leg = self.legs.get(leg_id)
            if leg is None:
                continue
            spoken = self.resolve(leg, items)
            # What the leg is told, by prompt id (tests and support read it).
            log.debug("call %d says (%s): %s", leg_id, slot, " ".join(map(str, spoken)))
            paths = tuple(p for p in self.paths(leg, spoken) if p.exists())
            if paths:
                groups.setdefault(paths, []).append(leg)
        for paths, legs in groups.items():
            self.ua.play_to([leg.id for leg in legs], paths, slot=slot)
            gens = {}
            for leg in legs:
                gens[leg.id] = leg.playback.slot_gen[slot] = leg.playback.slot_gen.get(slot, 0) + 1

            def free(legs: list[Leg] = legs, gens: dict[int, int] = gens) -> None:
                # All at once: the shared player leaves every mix in one tick.
                done = [leg.id for leg in legs if leg.playback.slot_gen.get(slot) == gens[leg.id]]
                self.ua.drop_play(done, slot)

            self.loop.call_later(sum(wav_seconds(p) for p in paths) + PROMPT_TAIL, free)

    def resolve(self, leg: Leg, items: Iterable[str | Path | Number]) -> list[str | Path]:
        """Counts -> the prompt ids that say them in the leg's language."""
        out: list[str | Path] = []
        for item in items:
            if isinstance(item, Number):
                out += number_prompts(item.value, leg.language, item.feminine)
            else:
                out.append(item)
        return out

    def paths(self, leg: Leg, items: Iterable[str | Path]) -> list[Path]:
        """Prompt ids, signal names and files -> the files to play."""
        out: list[Path] = []
        for item in items:
            if isinstance(item, Path):
                out.append(item)
            elif item in SIGNALS:
                out.append(self.signal(item))
            else:
                out.append(self.prompts.get(item, leg.language).path)
        return out

    def signal(self, name: str) -> Path:
        """A tone's WAV (made on first use)."""
        return self.prompts.signal(name)

    def loop_file(self, leg_id: int, path: Path, slot: str, share_with: Iterable[int] = ()) -> None:
        """Loop a file (music, ringback) in a slot until `stop`; with
        `share_with`, from the player that one of those legs' slot already
        loops (a room's waiting music: one source for all who wait)."""
        if not self.ua.join_play(leg_id, list(share_with), slot):
            self.ua.play(leg_id, [path], loop=True, slot=slot)

    def stop(self, leg_id: int, slot: str) -> None:
        """Stop what plays in a slot."""
        self.ua.stop_play(leg_id, slot=slot)

    def stop_all(self, leg_ids: Iterable[int], slot: str) -> None:
        """Stop what plays in a slot of several legs in the same instant."""
        self.ua.drop_play(list(leg_ids), slot)

    # -- timers (dropped with the leg) --------------------------------------
    def start_timer(self, leg: Leg, name: str, seconds: float, fire: Callable[[], None]) -> None:
        """Run `fire` in `seconds` unless the timer is cancelled or the leg ends."""
        self.cancel_timer(leg, name)

        def run() -> None:
            leg.playback.timers.pop(name, None)
            if leg.id in self.legs:
                fire()

        leg.playback.timers[name] = self.loop.call_later(seconds, run)

    def cancel_timer(self, leg: Leg, name: str) -> None:
        """Cancel one of the leg's timers, if set."""
        t = leg.playback.timers.pop(name, None)
        if t:
            t.cancel()

    def cancel_all(self, leg: Leg) -> None:
        """The leg ended: nothing of it may fire any more."""
        for t in leg.playback.timers.values():
            t.cancel()
        leg.playback.timers.clear()
        if leg.playback.prompt_timer is not None:
            leg.playback.prompt_timer.cancel()
            leg.playback.prompt_timer = None


class Refusal(Idle):
    """A call refused with a reason: answered 183, told why, then a final code."""

    def __init__(self, media: Media, prompt: str, reason: str, code: int) -> None:
        self.media, self.prompt, self.reason, self.code = media, prompt, reason, code

    def on_media_ready(self, leg: Leg) -> None:
        """Early media is up: say why, then send the final response."""
        self.media.play_then_hangup(leg, (self.prompt,), self.reason, self.code)
