"""A real audio device for tests on a machine without a sound card: ALSA's `file` plugin.

`file_device` writes an `.asoundrc` into `home` (run the program with HOME=home) defining the
PCM `cbtest`: what is played is appended to `speakers`, what is recorded is read from `mic`.
Playback and capture are separate plugins (`asym`): one `file` plugin for both would also copy
the recorded audio into the same output file. The null device underneath has no clock, so the
program under test must pace itself.
"""

from __future__ import annotations

from pathlib import Path

DEVICE = "cbtest"

_ASOUNDRC = """pcm.{name} {{
  type asym
  playback.pcm {{
    type file
    slave.pcm "null"
    file "{speakers}"
    format "raw"
  }}
  capture.pcm {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{mic}"
    format "raw"
  }}
  hint {{ show on description "callbridge test device" }}
}}
"""


def file_device(home: Path, mic: Path, speakers: Path) -> str:
    """Define the device in `home`/.asoundrc; returns its name."""
    (home / ".asoundrc").write_text(_ASOUNDRC.format(name=DEVICE, mic=mic, speakers=speakers))
    return DEVICE
