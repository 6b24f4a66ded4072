"""`callbridge serve --workers N`: a supervisor, N gateway worker processes and the built-in
single-box SIP dispatcher in front of them (docs: README "Using every core")."""
