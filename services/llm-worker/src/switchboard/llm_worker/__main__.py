"""`python -m switchboard.llm_worker`"""

from switchboard.common.lifecycle import run
from switchboard.llm_worker.app import serve
from switchboard.llm_worker.settings import WorkerSettings

if __name__ == "__main__":
    run(serve(WorkerSettings()))
