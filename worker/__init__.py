"""The device worker: pulls inference jobs from the API, runs them with pinned onnxruntime
settings, signs EIP-712 attestations of the results and submits them.

Modules: ``config`` (settings), ``keys`` (device key files), ``inference`` (models and
sessions), ``assignment`` (checking assignments), ``api_client`` (the HTTP contract),
``agent`` (the loop), ``cli`` (``inferledger worker``). Imports only ``protocol``.
"""
