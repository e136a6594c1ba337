"""SSH as the proof and the road: key pairs, host-key pins, jump hosts, logins and why they fail."""
