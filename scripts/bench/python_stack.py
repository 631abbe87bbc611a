"""The Python stack Coach is compared with, doing what Coach's chat function does at start.

FastAPI behind Mangum, boto3 clients for S3, DynamoDB and Secrets Manager, and LangChain
(an OpenAI chat model, a prompt template and a text splitter) built at import, as a Python
RAG backend on Lambda would. Its `GET /health` does what Coach's does: head the bucket and
describe the table. It serves invocations from the Runtime API in AWS_LAMBDA_RUNTIME_API with a
minimal runtime loop (the standard library's urllib), so `coldstart.py` measures it exactly
like Coach's binaries. The model is never called: its URL is a closed loopback port.
"""

import json
import os
import urllib.request

import boto3
from fastapi import FastAPI
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from langchain_text_splitters import RecursiveCharacterTextSplitter
from mangum import Mangum

BUCKET = os.environ["COACH_BUCKET"]
TABLE = os.environ["COACH_TABLE"]

s3 = boto3.client("s3")
dynamodb = boto3.client("dynamodb")
secrets = boto3.client("secretsmanager")
llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-bench", base_url="http://127.0.0.1:9/v1")
prompt = ChatPromptTemplate.from_messages([("system", "{system}"), ("human", "{question}")])
splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150)

app = FastAPI()


@app.get("/health")
def health():
    s3.head_bucket(Bucket=BUCKET)
    dynamodb.describe_table(TableName=TABLE)
    return {"status": "healthy"}


handler = Mangum(app, lifespan="off")


class Context:
    def __init__(self, request_id):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "python-stack")


def main():
    base = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/invocation"
    while True:
        with urllib.request.urlopen(f"{base}/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(response.read())
        result = handler(event, Context(request_id))
        body = json.dumps(result).encode()
        request = urllib.request.Request(f"{base}/{request_id}/response", data=body, method="POST")
        urllib.request.urlopen(request).read()


if __name__ == "__main__":
    main()
