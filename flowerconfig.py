"""Flower's configuration, read from the working directory by ``celery -A omoi.worker.app
flower`` (as the Procfile and compose run it): the task list shows each job's arguments and
keyword arguments, where omoi names the task, its attempt, key and ticket (README, Flower)."""

tasks_columns = "name,uuid,state,kwargs,result,exception,runtime,worker"
