"""webrtc"""
