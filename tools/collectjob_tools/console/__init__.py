"""`collectjob-console`: a web console over CollectJobs that holds no rights to them.

A person logs in with their own Kubernetes bearer token (checked with TokenReview); every
read and every action is made with that token, so the API server's RBAC and admission
decide what they may do. Buttons they may not use are hidden (SelfSubjectAccessReview),
and a forged request still meets the API server's 403.
"""
