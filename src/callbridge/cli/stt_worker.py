"""`python -m callbridge.cli.stt_worker`: a speech-recognition worker process, started by the
gateway (stt.isolated), never by hand. It speaks stt.worker_protocol on stdin/stdout and
logs to stderr like the gateway; it ends when the gateway closes its stdin."""

from __future__ import annotations

import argparse
import signal
import sys

from callbridge.observability.logging import setup_logging
from callbridge.stt.worker import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge-stt-worker")
    parser.add_argument("--engine", choices=("whisper", "pocketsphinx"), default="pocketsphinx")
    parser.add_argument("--second-pass", action="store_true")  # pocketsphinx
    parser.add_argument("--model", default="")  # whisper: a CTranslate2 directory; "" = packaged
    parser.add_argument("--threads", type=int, default=1)  # whisper: CTranslate2 threads
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--prompt", default="")
    parser.add_argument("--partial-interval", type=float, default=0.0)
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the gateway shuts down in order
    # (finishing what its calls were saying) and closes this worker's input when done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(args.log_format, args.log_level)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed by accident can corrupt the protocol
    if args.engine == "whisper":
        from callbridge.stt.whisper import WhisperEngine, WhisperOptions, WhisperRecognizer

        engine = WhisperEngine(
            WhisperOptions(
                model_dir=args.model,
                threads=args.threads,
                beam_size=args.beam_size,
                window=args.window,
                prompt=args.prompt,
                partial_interval=args.partial_interval,
            )
        )
        engine.warm()  # before the first request: no caller pays for the first decode
        return serve(sys.stdin.buffer, out, lambda: WhisperRecognizer(engine), engine.transcribe)
    from callbridge.stt.pocketsphinx import DecoderPool, PocketsphinxRecognizer

    pool = DecoderPool(second_pass=args.second_pass)
    return serve(sys.stdin.buffer, out, lambda: PocketsphinxRecognizer(pool=pool))


if __name__ == "__main__":
    raise SystemExit(main())
