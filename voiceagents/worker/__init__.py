"""The agent worker runtime: LiveKit's AgentServer run as a Django management command."""
