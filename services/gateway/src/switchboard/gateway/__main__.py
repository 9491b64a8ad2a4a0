"""`python -m switchboard.gateway`"""

import asyncio

from switchboard.gateway.app import serve
from switchboard.gateway.settings import GatewaySettings

if __name__ == "__main__":
    asyncio.run(serve(GatewaySettings()))
