"""The look every HTML report shares (`toolkit eval`, `toolkit recommend eval`): one style sheet."""

CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table.m{border-collapse:collapse} table.m td,table.m th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
td.v{text-align:right;font-variant-numeric:tabular-nums}
tr.better td{color:#2e7d32} tr.worse td{color:#c62828;font-weight:600}
.strip{display:flex;gap:6px;align-items:center;margin:6px 0}
.strip img{width:80px;height:80px;object-fit:contain;border:3px solid transparent;background:#fafafa}
.strip img.q{border-color:#333;margin-right:14px} .strip img.ok{border-color:#2e9e44} .strip img.no{border-color:#d33}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""
