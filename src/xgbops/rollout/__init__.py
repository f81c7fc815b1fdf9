"""The live rollout of a challenger: its state, the comparison of the arms and the decisions.

The API routes requests to arms (:mod:`api.core.rollout`); what a rollout is, how the arms
compare on live traffic and what to decide from it live here.
"""
