"""Composition root of hotline-bridge: configuration, storage, event bus and the ``hotline`` CLI.

This is the one place that builds real clients (database engine, Redis, AMI, FastAGI server, web
app) and wires the feature packages together. Nothing here or anywhere else connects at import
time; every client is created from a validated ``Settings`` object and passed explicitly.
"""
