FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e . && useradd --create-home omoi
USER omoi
EXPOSE 5000
CMD ["omoi", "api", "--host", "0.0.0.0", "--port", "5000"]
