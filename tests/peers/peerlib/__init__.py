"""Harness for end-to-end tests against real SIP/RTP peers (SIPp, baresip, tshark, sox)."""
