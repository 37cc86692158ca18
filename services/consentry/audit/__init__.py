"""Chain verification, timelines and breach reports for auditors."""
