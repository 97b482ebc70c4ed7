#!/usr/bin/env python3
"""A TCP proxy for tests: listens on 127.0.0.1:LISTEN and forwards each connection to
127.0.0.1:TARGET. Killing it is a network outage (every connection drops, the port
refuses); starting it again on the same port ends the outage, with the broker behind
it never restarted (its topics keep their ids).

usage: tcp-proxy.py LISTEN TARGET
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen, target):
    async def handle(client_reader, client_writer):
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, target_writer), pipe(target_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
