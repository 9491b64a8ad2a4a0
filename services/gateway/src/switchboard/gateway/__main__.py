"""`python -m switchboard.gateway`"""

from switchboard.common.lifecycle import run
from switchboard.gateway.app import serve
from switchboard.gateway.settings import GatewaySettings

if __name__ == "__main__":
    run(serve(GatewaySettings()))
