"""Obedience to governance: directives stop and start campaign runs, forks, acknowledgements."""
