from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from devices import registry, schemas
from kernel.authz import Access
from kernel.http import CipherDep, ClockDep, SessionDep, authorize

router = APIRouter(tags=["devices"])

RegisterDevice = Annotated[Access, Depends(authorize("devices.register"))]
ReadDevices = Annotated[Access, Depends(authorize("devices.read"))]
RevokeDevice = Annotated[Access, Depends(authorize("devices.revoke"))]


@router.post("/v1/devices", response_model=schemas.DeviceRegistered, status_code=201)
async def register_device(data: schemas.DeviceCreate, session: SessionDep, clock: ClockDep, cipher: CipherDep,
                          access: RegisterDevice) -> schemas.DeviceRegistered:
    """The token in the answer is shown once: it is the device's MQTT password and HTTP bearer token."""
    device, token = await registry.register_device(session, clock, cipher, access, data)
    return schemas.DeviceRegistered(device_id=device.device_id, kind=data.kind, elder_id=str(device.elder_id),
                                    token=token)


@router.get("/v1/devices/{device_id}", response_model=schemas.Device)
async def get_device(device_id: str, session: SessionDep, access: ReadDevices) -> schemas.Device:
    return registry.to_schema(await registry.load_device(session, access, device_id))


@router.post("/v1/devices/{device_id}/revoke", response_model=schemas.Device)
async def revoke_device(device_id: str, session: SessionDep, clock: ClockDep, access: RevokeDevice) -> schemas.Device:
    device = await registry.revoke_device(session, clock, access, device_id)
    await session.refresh(device)
    return registry.to_schema(device)
