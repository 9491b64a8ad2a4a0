"""`python -m switchboard.orchestrator`"""

from switchboard.common.lifecycle import run
from switchboard.orchestrator.app import serve
from switchboard.orchestrator.settings import OrchestratorSettings

if __name__ == "__main__":
    run(serve(OrchestratorSettings()))
