"""Routing without menus: the pure decision of which queue, priority and agent a call goes to.

Owns caller-number normalisation and the routing rules, written as data (open ticket, enterprise
directory, emergency numbers, default queue). Everything here is a pure function of its inputs so
it can be tested without a PBX and answered within a strict time budget.
"""
