"""The submit function: S3 media drops, S3 job documents and SQS job messages become fal jobs, once each.

`SubmitApp` (app.py) is the Lambda edge; `SubmitService` (service.py) the orchestration; `Planner`
(plan.py) turns a source into a job plan; `InputFiles` (files.py) turns input files into URLs fal can read.
"""
