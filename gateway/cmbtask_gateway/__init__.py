"""cmbtask gateway: sessions, tasks, approvals and events over REST and WebSocket."""
