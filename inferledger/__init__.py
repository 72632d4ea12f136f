"""inferledger's command line, client library, audit tool and demo."""
