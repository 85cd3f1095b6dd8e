"""What a host plugs into the application: routes, static files, figures for /metrics, and
work that lasts as long as the application.

The application knows nothing of what keeps it alive. `phoenix up` and `phoenix serve` add
their parts (the operations page, the supervisor's figures, serve's collector child) as
extensions given to `create_app` (stack/workerapp.py), never by an import from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

Figures = Callable[[], dict[str, float]]
Lifetime = Callable[[], AbstractContextManager[object] | AbstractAsyncContextManager[object]]


@dataclass(frozen=True, slots=True)
class Extension:
    """Parts a host adds to the application; several extensions are added in their order."""

    # Included after the application's own routes: the OpenAPI document and the catalogue
    # on / list them last, and the application's own paths keep their place.
    routers: tuple[APIRouter, ...] = ()
    # Folders served under /static behind the application's own: a name the application
    # has is the application's file.
    static: tuple[Path, ...] = ()
    # Gauges computed when /metrics is scraped, the same in every worker process.
    figures: tuple[Figures, ...] = ()
    # Called in the lifespan once the key pool runs and the store is migrated; the context
    # it returns (sync or async) is entered then and exited before the pool stops.
    lifetime: Lifetime | None = None


class StaticFolders(StaticFiles):
    """Files under one URL prefix from several folders: the first folder that holds a path
    serves it."""

    def __init__(self, folders: Sequence[Path]) -> None:
        super().__init__(directory=folders[0])
        self.all_directories = list(folders)


async def enter_lifetimes(stack: AsyncExitStack, extensions: Sequence[Extension]) -> None:
    """Enter each extension's lifetime in order; `stack` exits them in reverse."""
    for extension in extensions:
        if extension.lifetime is None:
            continue
        context = extension.lifetime()
        if isinstance(context, AbstractAsyncContextManager):
            await stack.enter_async_context(context)
        else:
            stack.enter_context(context)
