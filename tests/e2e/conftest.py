import pytest

from killstream_workstation.local.console import RunStats
from killstream_workstation.local.pipeline import LocalPipeline, PipelineSettings


@pytest.fixture
def pipeline_factory(database_url, restore_environ):
    """Local pipelines replaying documents fast against the test's database; stopped afterwards."""
    pipelines = []

    def make(docs, **overrides):
        settings = PipelineSettings(
            database_url=database_url,
            user_agent="killstream-tests/1.0 (ci@example.com)",
            replay=docs,
            replay_rate=0,
            pacing_ms=5,
            budget_seconds=3,
            tick_interval=0,
            visibility_timeout=2,
            **overrides,
        )
        pipeline = LocalPipeline(settings, RunStats())
        pipelines.append(pipeline)
        return pipeline.start()

    yield make
    for pipeline in pipelines:
        pipeline.stop()
