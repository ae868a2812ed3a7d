"""The bill-negotiation practice call: Sarah (and Marco, her supervisor) of Northwind Cable.

`scenario.yaml` holds the personas, the account and the offer ladder; `agent` is the call's part
on the server (its tools, outcome and hand-over); `responder` plays the personas on the local
engine by the scenario's scripted policy.
"""
