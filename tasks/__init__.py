"""Tasks, registered under OFA's names. Importing this package registers every task module."""

from tasks import caption, gigaword, glue, image_classify, image_gen, refcoco, snli_ve, unify_task, vqa_gen  # noqa: F401
from tasks.base import TASKS, Task, TaskConfig

__all__ = ["TASKS", "Task", "TaskConfig"]
