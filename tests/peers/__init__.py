"""End-to-end tests of callbridge against real peers on loopback (marked `peer`)."""
