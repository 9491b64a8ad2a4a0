"""`python -m switchboard.llm_worker`"""

import asyncio

from switchboard.llm_worker.app import serve
from switchboard.llm_worker.settings import WorkerSettings

if __name__ == "__main__":
    asyncio.run(serve(WorkerSettings()))
