import logging


def run(message: str = "hello") -> str:
    logging.getLogger("testpack.talk").warning("action says %s", message)
    return message
