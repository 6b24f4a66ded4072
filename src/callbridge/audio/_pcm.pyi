# The C module audio/_pcm.c (built by callbridge.cli.native; absent when interpreted).
from typing_extensions import Buffer

def energy(pcm: Buffer, /) -> int: ...
