import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { marshall, unmarshall } from "@aws-sdk/util-dynamodb";
import { ConflictError, NotFoundError } from "../../core/errors.ts";
import type { MemberStatus } from "../../core/image/access.ts";
import type { ImageRecord } from "../../core/image/image.ts";
import type { ImageMember } from "../../core/image/members.ts";
import { listPosition, type MemberRepository } from "../../core/ports.ts";
import {
  DeleteItemCommand,
  GetItemCommand,
  type ItemClient,
  PutItemCommand,
  paginateQuery,
  refusedAs,
  UpdateItemCommand,
} from "./item-commands.ts";

const imagePk = (id: string) => `IMAGE#${id}`;
const memberSk = (project: string) => `MEMBER#${project}`;
const FIELDS = ["image_id", "member_id", "status", "created_at", "updated_at"] as const;

/** GSI1 partition of the images shared with a project. */
export const memberPartition = (project: string) => `MEMBER#${project}`;

export function toMember(item: Record<string, AttributeValue>): ImageMember {
  const raw = unmarshall(item);
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) out[f] = raw[f];
  return out as unknown as ImageMember;
}

const notFound = (imageId: string, memberId: string, cause?: unknown) =>
  new NotFoundError(`Member ${memberId} of image ${imageId} not found.`, "MEMBER_NOT_FOUND", { cause });

/**
 * Image members in Hangar's single table: `IMAGE#<id>`/`MEMBER#<project>`, next to the image, and in GSI1
 * under `MEMBER#<project>` so a project's shares are one query, in the order of the images' creation
 * (`gsi1sk` is the image's list position), like every other listing index.
 */
export class DynamoMemberRepository implements MemberRepository {
  constructor(
    private readonly client: ItemClient,
    private readonly table: string,
  ) {}

  async add(member: ImageMember, image: Pick<ImageRecord, "created_at">): Promise<void> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: marshall({
            pk: imagePk(member.image_id),
            sk: memberSk(member.member_id),
            gsi1pk: memberPartition(member.member_id),
            gsi1sk: listPosition({ created_at: image.created_at, id: member.image_id }),
            ...member,
          }),
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (err) {
      if (refusedAs(err, "ConditionalCheckFailedException")) {
        throw new ConflictError(
          `Member ${member.member_id} already associated with image ${member.image_id}.`,
          "DUPLICATE_MEMBER",
          { cause: err },
        );
      }
      throw err;
    }
  }

  async get(imageId: string, memberId: string): Promise<ImageMember | undefined> {
    const out = await this.client.send(
      new GetItemCommand({
        TableName: this.table,
        Key: marshall({ pk: imagePk(imageId), sk: memberSk(memberId) }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? toMember(out.Item) : undefined;
  }

  private async query(input: {
    index?: "gsi1";
    pkName: string;
    pk: string;
    /** Omitted for GSI1, whose `MEMBER#<project>` partition holds memberships only. */
    sk?: { name: string; prefix: string };
  }): Promise<ImageMember[]> {
    const pages = paginateQuery(
      { client: this.client },
      {
        TableName: this.table,
        ...(input.index ? { IndexName: input.index } : { ConsistentRead: true }),
        KeyConditionExpression: input.sk ? "#pk = :pk AND begins_with(#sk, :prefix)" : "#pk = :pk",
        ExpressionAttributeNames: { "#pk": input.pkName, ...(input.sk ? { "#sk": input.sk.name } : {}) },
        ExpressionAttributeValues: marshall({
          ":pk": input.pk,
          ...(input.sk ? { ":prefix": input.sk.prefix } : {}),
        }),
      },
    );
    const members: ImageMember[] = [];
    for await (const page of pages) for (const item of page.Items ?? []) members.push(toMember(item));
    return members;
  }

  listByImage(imageId: string): Promise<ImageMember[]> {
    return this.query({ pkName: "pk", pk: imagePk(imageId), sk: { name: "sk", prefix: "MEMBER#" } });
  }

  /** GSI1 under `MEMBER#<project>` (image items are under `OWNER#<project>`, so no overlap). */
  listByMember(memberId: string): Promise<ImageMember[]> {
    return this.query({ index: "gsi1", pkName: "gsi1pk", pk: memberPartition(memberId) });
  }

  async setStatus(
    imageId: string,
    memberId: string,
    status: MemberStatus,
    updatedAt: string,
  ): Promise<ImageMember> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: imagePk(imageId), sk: memberSk(memberId) }),
          UpdateExpression: "SET #status = :s, updated_at = :u",
          ConditionExpression: "attribute_exists(pk)",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: marshall({ ":s": status, ":u": updatedAt }),
          ReturnValues: "ALL_NEW",
        }),
      );
      if (!out.Attributes) throw notFound(imageId, memberId);
      return toMember(out.Attributes);
    } catch (err) {
      if (refusedAs(err, "ConditionalCheckFailedException")) throw notFound(imageId, memberId, err);
      throw err;
    }
  }

  async remove(imageId: string, memberId: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: marshall({ pk: imagePk(imageId), sk: memberSk(memberId) }),
          ConditionExpression: "attribute_exists(pk)",
        }),
      );
    } catch (err) {
      if (refusedAs(err, "ConditionalCheckFailedException")) throw notFound(imageId, memberId, err);
      throw err;
    }
  }

  async removeAll(imageId: string): Promise<void> {
    for (const m of await this.listByImage(imageId)) {
      await this.client.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: marshall({ pk: imagePk(imageId), sk: memberSk(m.member_id) }),
        }),
      );
    }
  }
}
