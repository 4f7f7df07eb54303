"""Notifications: channels behind one Protocol, pure rules and templates, deduplicated and logged delivery."""
