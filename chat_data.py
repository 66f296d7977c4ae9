"""Turn exported chats into {"input", "output"} training pairs: what someone wrote, and how I replied.

    python chat_data.py WhatsApp.txt result.json --me="Ana Silva" --out=data/chat/pairs.jsonl
    python chat_data.py inbox/ --me="Ana Silva" --since=2022-01-01 --top_contacts=10
    python chat_data.py export.csv --me=ana --columns=sender=Author,text=Content,time=Date
    python chat_data.py --help        # every option with its default

Formats are recognised from the content, not the file name: WhatsApp (Android and iOS .txt, or the
.zip as shared), Telegram Desktop (HTML messages*.html, or result.json of one chat or the whole
account), Facebook Messenger / Instagram message_N.json, iMessage (CSV, or the .txt of
imessage-exporter), Discord (DiscordChatExporter JSON or CSV), LINE (.txt), KakaoTalk (.txt or .csv),
Signal (its own export's main.jsonl, or signal-export's chat.md or data.json), Slack (the workspace export .zip or its folder), Google
Chat (Takeout's messages.json), Snapchat (chat_history.json), Skype (messages.json or its .tar), any
other CSV through --columns, and JSONL of {"input", "output"} pairs written by hand. A folder or .zip is read file by file, and what
it holds besides chats is listed. Everything happens on this machine: nothing is sent anywhere.

This file only starts the command: the work is done by the `chat/` package (chat/pipeline.py reads,
pairs, cleans, reports and writes; one module per app family; the cleaning rules; the report).
"""
from chat.pipeline import main
from gptlib.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
