"""The REST gateway: TractionBuild's HTTP door, translating to the orchestrator's ValidationService."""
