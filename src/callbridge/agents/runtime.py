"""What all voice-agent calls share: the batched VAD pool, the speech worker threads, the TTS
voice, and factories for the per-call parts (recognizer, brain). Started and closed once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from callbridge.agents.conversation import Conversation, ConversationConfig, TurnModel
from callbridge.agents.vad_pool import VadPool
from callbridge.agents.voice import VoiceAgent, VoiceAgentConfig
from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.ports import CallLeg
from callbridge.llm.base import Brain
from callbridge.media.smart_turn import SmartTurn
from callbridge.media.vad import SileroVad
from callbridge.stt.base import Recognizer
from callbridge.tts.base import Synthesizer

log = logging.getLogger("callbridge.agents.runtime")


@dataclass(slots=True)
class VoiceRuntime:
    clock: Clock
    synthesizer: Callable[[], Synthesizer]  # called once, on a worker thread (loads the voice)
    recognizer: Callable[[], Recognizer]  # one per call
    brain: Callable[[], Brain]  # one per call (brains keep conversation state)
    conversation: ConversationConfig = ConversationConfig()
    agent: VoiceAgentConfig = VoiceAgentConfig()
    threads: int = 2  # speech work (STT, TTS) off the event loop; the machine has 2 cores
    # end-of-turn model shared by all calls: "smart-turn" (Smart Turn v3, ONNX) | "off"
    turn_model: str = "smart-turn"
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _pool: VadPool | None = None
    _pool_task: asyncio.Task[None] | None = None
    _tts: Synthesizer | None = None
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    _turn_model: TurnModel | None = None
    # its own thread: a verdict must not queue behind a clause being synthesised
    _turn_executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Load the models (on worker threads) and start the VAD pool's tick."""
        loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="speech"
        )
        vad, tts, stt = await asyncio.gather(
            loop.run_in_executor(self._executor, SileroVad),
            loop.run_in_executor(self._executor, self.synthesizer),
            loop.run_in_executor(self._executor, self.recognizer),  # warms the model cache
        )
        stt.close()
        self._tts = tts
        if self.turn_model == "smart-turn":
            self._turn_executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="turn-model"
            )
            self._turn_model = await loop.run_in_executor(self._turn_executor, SmartTurn)
        # Coalescing 4 ms: a turn's last chunk is judged ~12 ms sooner than on the 32 ms tick.
        self._pool = VadPool(vad, self.clock, coalesce=0.004)
        self._pool_task = loop.create_task(self._pool.run(), name="vad-pool")
        event(log, "agent.ready", tts=type(tts).__name__, turn_model=self.turn_model)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._pool_task is not None:
            self._pool_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_task
        for close in self.on_close:
            with contextlib.suppress(Exception):
                await close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._turn_executor is not None:
            self._turn_executor.shutdown(wait=False, cancel_futures=True)

    def new_agent(self) -> VoiceAgent:
        if self._pool is None or self._tts is None or self._executor is None:
            raise RuntimeError("VoiceRuntime.start() has not run")
        pool, tts, executor = self._pool, self._tts, self._executor

        def conversation(leg: CallLeg) -> Conversation:
            return Conversation(
                leg,
                clock=self.clock,
                vad_pool=pool,
                recognizer=self.recognizer,
                synthesizer=tts,
                executor=executor,
                config=self.conversation,
                turn_model=self._turn_model,
                turn_executor=self._turn_executor,
            )

        return VoiceAgent(
            brain=self.brain(), conversation=conversation, clock=self.clock, config=self.agent
        )
