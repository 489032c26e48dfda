"""GET / DELETE /v1/users/{user_id}: what is stored about a user, and erasing it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from service.api.deps import GalleryDep, VariantsDep
from service.api.errors import problem_responses
from service.api.routes import API_PREFIX
from service.errors import UserNotFound
from service.gallery import gallery_key
from service.schemas import (
    USER_ID_DESCRIPTION,
    USER_ID_PATTERN,
    DeleteUserResponse,
    TemplateGroup,
    UserResponse,
)

router = APIRouter(prefix=f"{API_PREFIX}/users", tags=["gallery"])

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description=USER_ID_DESCRIPTION)]

_NOT_FOUND = "No templates are enrolled under this user id."


@router.get(
    "/{user_id}",
    summary="Template counts of a user (never the templates themselves)",
    response_model=UserResponse,
    responses=problem_responses("user_not_found"),
)
async def get_user(user_id: UserId, gallery: GalleryDep, variants: VariantsDep) -> UserResponse:
    counts = await run_in_threadpool(gallery.count_templates, user_id)
    if not counts:
        raise UserNotFound(_NOT_FOUND)
    served = {gallery_key(e) for e in variants.embedders.values()}
    return UserResponse(
        user_id=user_id,
        total_templates=sum(c.count for c in counts),
        templates=[
            TemplateGroup(
                variant=c.model_ref, model_sha256=c.key.sha256, count=c.count, served=c.key in served
            )
            for c in counts
        ],
    )


@router.delete(
    "/{user_id}",
    summary="Erase every template of a user, in every variant",
    response_model=DeleteUserResponse,
    responses=problem_responses("user_not_found"),
)
async def delete_user(user_id: UserId, gallery: GalleryDep) -> DeleteUserResponse:
    deleted = await run_in_threadpool(gallery.delete_user, user_id)
    if not deleted:
        raise UserNotFound(_NOT_FOUND)
    return DeleteUserResponse(user_id=user_id, deleted_templates=deleted)
