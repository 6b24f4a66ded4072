"""Listening: every decision about the caller's side of a voice conversation, sans-IO.

Fed caller frames, VAD results, transcripts and end-of-turn verdicts (each with its `now`),
it returns actions for the shell (agents/conversation.py) to carry out: feed the recognizer,
report the turn, hold or release the agent's playout, confirm a barge-in, ask the turn model.

- pre-roll: the last `pre_roll_frames` of caller audio start every utterance, because the VAD
  reports an onset a chunk or two after the first phoneme;
- turn taking: media.turns.TurnDetector over the VAD probabilities (echo-gated by the agent's
  playback level, a failed VAD chunk judged by its level);
- preparing during the pause: after `prepare_after` of silence the transcript is finished
  early (PrepareTurn, tentative) and the answer built while its playout is held; ConfirmTurn
  releases it when the turn ends, ResumeTurn drops it when the caller goes on (the whole
  turn's audio is then decoded again);
- semantic end of turn (`semantic`): after `turn.end_silence` of silence the turn model is
  asked (AskTurnModel). Complete -> the turn ends then; incomplete -> it ends only after
  `end_silence_max`, unless speech resumes. A prepared transcript that is lexically
  unfinished ("... and", a bare "hello") counts as incomplete whatever the prosody says;
- barge-in: media.bargein.BargeInDetector; suspected caller speech over the agent pauses the
  playout at once, confirmed speech interrupts it (ConfirmBargeIn).

The actions are defined in media.listening_actions and the lexical check in media.lexical;
both are re-exported here, the one import path for the shell.

No timers: VAD results arrive for every 32 ms of caller audio, silence included, so each
duration is checked on the next result (or when a transcript or verdict comes back).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from dataclasses import dataclass

from callbridge.media.bargein import BargeInConfig, BargeInDetector
from callbridge.media.lexical import lexically_unfinished
from callbridge.media.listening_actions import (
    AskTurnModel,
    ConfirmBargeIn,
    ConfirmTurn,
    DiscardUtterance,
    EndTurn,
    FeedStt,
    FinishUtterance,
    ListenAction,
    PausePlayout,
    PrepareTurn,
    ResumePlayout,
    ResumeTurn,
    SpeechOnset,
    StartUtterance,
)
from callbridge.media.turns import (
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEnded,
    TurnState,
)
from callbridge.media.vad import VadResult

__all__ = [
    "AskTurnModel",
    "ConfirmBargeIn",
    "ConfirmTurn",
    "DiscardUtterance",
    "EndTurn",
    "FeedStt",
    "FinishUtterance",
    "ListenAction",
    "Listener",
    "ListeningConfig",
    "PausePlayout",
    "PrepareTurn",
    "ResumePlayout",
    "ResumeTurn",
    "SpeechOnset",
    "StartUtterance",
    "lexically_unfinished",
]

FALLBACK_SPEECH_DBFS = -45.0  # a chunk the VAD could not judge counts as speech above this
_EPS = 1e-9
_BYTES_PER_SAMPLE = 2


@dataclass(frozen=True, slots=True)
class ListeningConfig:
    turn: TurnConfig = TurnConfig()  # turn.end_silence: the end of turn (the quick one if semantic)
    bargein: BargeInConfig = BargeInConfig()
    allow_barge_in: bool = True
    # Silence after which the answer is prepared while the end of the turn is still unsure.
    # None: prepare nothing before the end of the turn.
    prepare_after: float | None = 0.15
    semantic: bool = False  # ask a turn model at turn.end_silence (AskTurnModel)
    end_silence_max: float = 1.2  # silence that ends a turn the model calls incomplete
    complete_threshold: float = 0.5  # model probability from which the turn is complete
    lexical: bool = True  # a prepared transcript ending mid-phrase vetoes "complete"
    pre_roll_frames: int = 20  # 400 ms of 20 ms frames
    stt_batch_frames: int = 5  # feed the recognizer 100 ms at a time (fewer thread hops)
    model_window: float = 8.0  # seconds of the turn's audio the model sees (Smart Turn: 8)
    sample_rate: int = 8000

    def __post_init__(self) -> None:
        if self.semantic and self.end_silence_max < self.turn.end_silence:
            raise ValueError("end_silence_max must be >= turn.end_silence")
        if not 0.0 <= self.complete_threshold <= 1.0:
            raise ValueError("complete_threshold must be within [0, 1]")


# ---- the core ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pending:
    tentative: bool
    speech_start: float
    speech_end: float
    decided_at: float


class Listener:
    def __init__(self, config: ListeningConfig | None = None) -> None:
        self.config = cfg = config or ListeningConfig()
        # Semantic mode: silence alone ends the turn only at end_silence_max; the quick end
        # at turn.end_silence needs the model's "complete".
        turn = (
            dataclasses.replace(cfg.turn, end_silence=cfg.end_silence_max)
            if cfg.semantic
            else cfg.turn
        )
        self.turns = TurnDetector(turn)
        self.bargein = BargeInDetector(cfg.bargein)
        self._pre_roll: collections.deque[bytes] = collections.deque(maxlen=cfg.pre_roll_frames)
        self._stt_pending: list[bytes] = []
        self._in_turn = False
        self._stt_open = False  # the recognizer is inside an utterance
        self._turn_audio: list[bytes] = []  # the current turn's audio, to re-decode on resume
        self._requests = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._tentative = 0  # request of the tentative transcript in flight (0: none)
        self._tentative_text: str | None = None  # its text, once it came (PrepareTurn sent)
        self._answer_held = False  # answer audio waits for ConfirmTurn
        self._confirm_pending = False  # the turn ended before its tentative transcript came
        self._held = False  # playout paused (suspected barge-in or an answer not yet due)
        self._held_at: float | None = None
        self._asked = 0  # verdict request of this pause (0: not asked)
        self._complete: bool | None = None  # its verdict, once in

    @property
    def held(self) -> bool:
        return self._held

    # ---- inputs -----------------------------------------------------------------------------

    def frame(self, pcm: bytes, now: float) -> list[ListenAction]:
        """A caller frame (before it goes to the VAD)."""
        out: list[ListenAction] = []
        self._pre_roll.append(pcm)
        if self._in_turn:
            self._turn_audio.append(pcm)
            if self._stt_open:
                self._stt_pending.append(pcm)
                if len(self._stt_pending) >= self.config.stt_batch_frames:
                    self._flush(out)
        return out

    def vad(
        self, result: VadResult, *, agent_speaking: bool, agent_dbfs: float
    ) -> list[ListenAction]:
        """A VAD verdict on the caller's audio up to `result.end` (its `now`).
        `agent_speaking`: an answer is being synthesised or played; `agent_dbfs`: the
        loudest recent playback frame (the echo reference)."""
        cfg = self.config
        now = result.end
        out: list[ListenAction] = []
        probability = result.probability
        if result.source == "failed":
            # The model missed its deadline (overload): judge by level rather than take it
            # for silence, which would end the caller's turn in the middle of a sentence.
            probability = 1.0 if result.level_dbfs >= FALLBACK_SPEECH_DBFS else 0.0
        speech = probability
        # The agent's own voice comes back on the caller's stream (phone or line echo): while
        # it may, caller audio not louder than that echo could be is not the caller.
        if result.level_dbfs < self.bargein.echo_threshold(agent_dbfs):
            probability = 0.0
        was_stopping = self.turns.state is TurnState.STOPPING
        for ev in self.turns.update(probability, now, result.level_dbfs):
            match ev:
                case SpeechStarted(at=at):
                    self._start_turn(at, out)
                case SpeechConfirmed(onset=onset):
                    out.append(SpeechOnset(onset))
                case SpeechDiscarded():
                    self._in_turn = self._stt_open = False
                    self._stt_pending = []
                    out.append(DiscardUtterance())
                case TurnEnded():
                    self._end_turn(ev, out)
        if was_stopping and self.turns.state is TurnState.SPEAKING:
            self._asked, self._complete = 0, None  # a new pause will be judged afresh
            if self._tentative and self._resume_turn(now, out):
                agent_speaking = False  # what it was preparing has just been dropped
        self._maybe_prepare(now, agent_speaking, out)
        self._maybe_ask(now, out)
        self._maybe_end(now, out)
        if cfg.allow_barge_in:
            barge = self.bargein.update(
                caller_dbfs=result.level_dbfs,
                speech=speech,
                # held answer audio is not heard: speech over it is the turn going on
                agent_playing=agent_speaking and not self._answer_held,
                agent_dbfs=agent_dbfs,
                now=now,
            )
            if barge is not None:
                out.append(ConfirmBargeIn(barge.onset, barge.at, self._held_at or barge.at))
            self._update_hold(now, out)
        return out

    def transcript(self, request: int, text: str, now: float) -> list[ListenAction]:
        """The text of FinishUtterance `request` (decoded or failed: "")."""
        pending = self._pending.pop(request, None)
        if pending is None:
            return []
        p = pending
        latency = now - p.decided_at
        if not p.tentative:
            return [EndTurn(text, p.speech_start, p.speech_end, p.decided_at, latency)]
        if request != self._tentative:
            return []  # the caller went on meanwhile: this transcript is stale
        if self._confirm_pending:  # the turn ended while this was decoded: it is final
            self._reset_tentative()
            return [EndTurn(text, p.speech_start, p.speech_end, p.decided_at, latency)]
        out: list[ListenAction] = []
        self._tentative_text = text
        self._answer_held = True
        self._update_hold(now, out)
        out.append(PrepareTurn(text, p.speech_start, p.speech_end, p.decided_at, latency))
        self._maybe_end(now, out)
        return out

    def verdict(self, request: int, probability: float, now: float) -> list[ListenAction]:
        """The turn model's answer to AskTurnModel `request`: P(the turn is complete)."""
        if request != self._asked:
            return []  # the caller went on, or the turn ended, meanwhile
        self._complete = probability >= self.config.complete_threshold
        out: list[ListenAction] = []
        self._maybe_end(now, out)
        return out

    def hold(self) -> None:
        """The call was put on (or taken off) hold: whatever speech was under way is over."""
        self.turns.reset()

    # ---- turns ------------------------------------------------------------------------------

    def _start_turn(self, at: float, out: list[ListenAction]) -> None:
        self._in_turn = self._stt_open = True
        self._turn_audio = list(self._pre_roll)  # the onset arrived before the VAD said so
        self._stt_pending = []
        out.append(StartUtterance(b"".join(self._pre_roll)))

    def _end_turn(self, ev: TurnEnded, out: list[ListenAction]) -> None:
        self._in_turn = False
        self._turn_audio = []
        self._asked, self._complete = 0, None
        if self._tentative:
            # Prepared already: let the held answer play (or, if its transcript is still
            # being decoded, report that transcript as the final turn when it comes).
            if self._tentative_text is not None:
                self._reset_tentative()
                self._update_hold(ev.at, out)  # releases the held answer
                out.append(ConfirmTurn(ev.at))
            else:
                self._confirm_pending = True
            return
        self._stt_open = False
        self._flush(out)
        request = next(self._requests)
        self._pending[request] = _Pending(False, ev.speech_start, ev.speech_end, ev.at)
        out.append(FinishUtterance(request))

    def _maybe_prepare(self, now: float, agent_speaking: bool, out: list[ListenAction]) -> None:
        """After `prepare_after` of silence, finish the transcript early (a tentative turn),
        so the answer is ready by the time the silence ends the turn."""
        after = self.config.prepare_after
        since = self.turns.silent_since
        if (
            after is None
            or since is None
            or self._tentative
            or now - since + _EPS < after
            or after >= self.config.turn.end_silence
            or agent_speaking  # the agent is talking: a backchannel, not a turn to prepare for
        ):
            return
        self._tentative = request = next(self._requests)
        self._flush(out)
        self._stt_open = False
        self._pending[request] = _Pending(True, self.turns.onset or since, since, now)
        out.append(FinishUtterance(request))

    def _resume_turn(self, now: float, out: list[ListenAction]) -> bool:
        """Speech after a tentative turn: decode the whole turn again (the recognizer closed
        its utterance at the tentative end). True if a prepared answer is to be dropped."""
        emitted = self._tentative_text is not None
        self._reset_tentative()
        out.append(StartUtterance(b"".join(self._turn_audio)))
        self._stt_open = True
        if emitted:
            self._held = False  # the shell's flush releases the leg's hold
            out.append(ResumeTurn(now))
        return emitted

    def _reset_tentative(self) -> None:
        if self._tentative:
            self._pending.pop(self._tentative, None)
        self._tentative = 0
        self._tentative_text = None
        self._confirm_pending = False
        self._answer_held = False

    # ---- semantic end of turn ---------------------------------------------------------------

    def _maybe_ask(self, now: float, out: list[ListenAction]) -> None:
        cfg = self.config
        since = self.turns.silent_since
        if (
            not cfg.semantic
            or self._asked
            or since is None
            or not self._in_turn
            or now - since + _EPS < cfg.turn.end_silence
        ):
            return
        self._asked = request = next(self._requests)
        window = round(cfg.model_window * cfg.sample_rate) * _BYTES_PER_SAMPLE
        pcm = b"".join(self._turn_audio)[-window:]
        out.append(AskTurnModel(request, pcm, cfg.sample_rate, now))

    def _maybe_end(self, now: float, out: list[ListenAction]) -> None:
        """End the turn early: the model says complete and the silence reached the quick end
        (and a prepared transcript, once in, does not stop mid-phrase)."""
        since = self.turns.silent_since
        if not self._complete or since is None or now - since + _EPS < self.config.turn.end_silence:
            return
        if self._tentative and not self._confirm_pending:
            text = self._tentative_text
            if text is None:
                return  # being decoded: the answer cannot play before it anyway
            if self.config.lexical and lexically_unfinished(text):
                return
        ended = self.turns.end(now)
        if ended is not None:
            self._end_turn(ended, out)

    # ---- playout hold and STT batching --------------------------------------------------------

    def _update_hold(self, now: float, out: list[ListenAction]) -> None:
        """Silence the agent the moment caller speech over it qualifies, before it is confirmed
        as an interruption; a cough releases the hold and the answer goes on where it was.
        An answer prepared for a tentative turn is held the same way until confirmed."""
        suspected = self.bargein.holding
        hold = suspected or self._answer_held
        if hold != self._held:
            self._held = hold
            self._held_at = now if suspected else None
            out.append(
                PausePlayout("caller" if suspected else "prepared", now)
                if hold
                else ResumePlayout(now)
            )

    def _flush(self, out: list[ListenAction]) -> None:
        if self._stt_pending:
            out.append(FeedStt(b"".join(self._stt_pending)))
            self._stt_pending = []
