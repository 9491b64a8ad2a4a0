"""`python -m switchboard.orchestrator`"""

import asyncio

from switchboard.orchestrator.app import serve
from switchboard.orchestrator.settings import OrchestratorSettings

if __name__ == "__main__":
    asyncio.run(serve(OrchestratorSettings()))
