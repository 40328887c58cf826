"""Campaigns: config, tasks, the scheduler, the LLM agents, leaderboards."""
