"""The tenant portal: live usage, commitment position, drafts, issued statements and
completeness per tenant, over expiring tokens; and the alerts it sends (portal/alerts.py)."""
